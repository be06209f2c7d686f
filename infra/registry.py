"""ECR: one repository per configured name, immutable tags, scan on push, KMS, bounded storage.

Storage is what ECR bills for: 50 images of 32 GB cost $160 a month. Each
repository keeps the newest ``keep_images`` tagged images (everything still
deployable) and drops untagged layers-only images after a day.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

UNTAGGED_EXPIRY_DAYS = 1
TAG_STATUSES = ("tagged", "untagged", "any")
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed")


def lifecycle_policy(keep_images: int) -> dict[str, Any]:
    """The lifecycle policy document for one repository.

    Rule 1 expires untagged images one day after push. Rule 2 counts only tagged
    images (``tagPatternList: ["*"]``), so an untagged push never pushes a
    deployable tag out of the newest ``keep_images``.
    """
    if keep_images < 1:
        raise ValueError(f"keep_images ({keep_images}) must be >= 1")
    return {"rules": [
        {
            "rulePriority": 1,
            "description": f"expire untagged images {UNTAGGED_EXPIRY_DAYS} day after push",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                          "countUnit": "days", "countNumber": UNTAGGED_EXPIRY_DAYS},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"keep the newest {keep_images} tagged images",
            "selection": {"tagStatus": "tagged", "tagPatternList": ["*"],
                          "countType": "imageCountMoreThan", "countNumber": keep_images},
            "action": {"type": "expire"},
        },
    ]}


def lifecycle_rule_problems(policy: Any) -> list[str]:
    """What ECR would reject in a lifecycle policy (a dict or its JSON text); [] when valid.

    ECR's rules: ``rulePriority`` unique positive integers; at most one
    ``tagStatus: any`` rule, and it carries the highest priority number; a
    ``tagged`` rule names ``tagPrefixList`` or ``tagPatternList`` (not both);
    ``sinceImagePushed`` counts ``days``; counts are positive; the action is ``expire``.
    Pure, so the policy pack can call it on the planned resource.
    """
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except json.JSONDecodeError as e:
            return [f"not valid JSON: {e}"]
    if not isinstance(policy, Mapping) or not isinstance(policy.get("rules"), list) or not policy["rules"]:
        return ["must be an object with a non-empty 'rules' list"]
    problems: list[str] = []
    priorities: list[int] = []
    any_priorities: list[int] = []
    for i, rule in enumerate(policy["rules"]):
        where = f"rules[{i}]"
        if not isinstance(rule, Mapping):
            problems.append(f"{where} must be an object")
            continue
        priority = rule.get("rulePriority")
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
            problems.append(f"{where}.rulePriority ({priority!r}) must be a positive integer")
            priority = None
        else:
            priorities.append(priority)
        selection = rule.get("selection")
        if not isinstance(selection, Mapping):
            problems.append(f"{where}.selection must be an object")
            continue
        status = selection.get("tagStatus")
        if status not in TAG_STATUSES:
            problems.append(f"{where}.selection.tagStatus ({status!r}) must be one of {', '.join(TAG_STATUSES)}")
        lists = [k for k in ("tagPrefixList", "tagPatternList") if selection.get(k)]
        if status == "tagged" and len(lists) != 1:
            problems.append(f"{where}: a tagged rule needs exactly one of tagPrefixList or tagPatternList")
        if status != "tagged" and lists:
            problems.append(f"{where}: {lists[0]} is only allowed with tagStatus tagged")
        if status == "any" and priority is not None:
            any_priorities.append(priority)
        count_type = selection.get("countType")
        if count_type not in COUNT_TYPES:
            problems.append(f"{where}.selection.countType ({count_type!r}) must be one of {', '.join(COUNT_TYPES)}")
        if count_type == "sinceImagePushed" and selection.get("countUnit") != "days":
            problems.append(f"{where}.selection.countUnit must be days for sinceImagePushed")
        count = selection.get("countNumber")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append(f"{where}.selection.countNumber ({count!r}) must be a positive integer")
        action = rule.get("action")
        if not isinstance(action, Mapping) or action.get("type") != "expire":
            problems.append(f"{where}.action.type must be expire")
    duplicates = sorted({p for p in priorities if priorities.count(p) > 1})
    if duplicates:
        problems.append(f"rulePriority values must be unique (repeated: {', '.join(map(str, duplicates))})")
    if len(any_priorities) > 1:
        problems.append("at most one rule may select tagStatus any")
    elif any_priorities and any_priorities[0] < max(priorities):
        problems.append(f"the tagStatus any rule (rulePriority {any_priorities[0]}) must have the highest "
                        f"rulePriority ({max(priorities)} is higher)")
    return problems


@dataclass(frozen=True)
class RegistryArgs:
    repositories: tuple[str, ...]
    keep_images: int = 10
    # None: ECR's AWS-managed key (aws/ecr). A customer key needs a key policy that lets ECR create grants.
    kms_key_arn: Optional[pulumi.Input[str]] = None
    tags: dict[str, str] = field(default_factory=dict)


class Registry(pulumi.ComponentResource):
    """ECR repositories with lifecycle policies. ``urls``: name -> repository URL."""

    def __init__(self, name: str, args: RegistryArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:Registry", name, None, opts)
        policy = json.dumps(lifecycle_policy(args.keep_images), sort_keys=True)
        problems = lifecycle_rule_problems(policy)
        if problems:  # a bug in lifecycle_policy, not bad input: config already bounds keep_images
            raise AssertionError("; ".join(problems))
        self.repositories: dict[str, aws.ecr.Repository] = {}
        for repo in args.repositories:
            logical = f"{name}-{repo.replace('/', '--')}"  # "--" cannot occur in a name
            repository = aws.ecr.Repository(
                logical,
                name=repo,
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.kms_key_arn)],
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws.ecr.LifecyclePolicy(
                logical,
                repository=repository.name,
                policy=policy,
                opts=pulumi.ResourceOptions(parent=repository),
            )
            self.repositories[repo] = repository
        # Names come from the resources (not the config) so users of them wait for the repositories.
        self.names: pulumi.Output[list[str]] = (
            pulumi.Output.all(*[r.name for r in self.repositories.values()]) if self.repositories
            else pulumi.Output.from_input([]))
        self.urls: pulumi.Output[dict[str, str]] = (
            pulumi.Output.all(**{repo: r.repository_url for repo, r in self.repositories.items()})
            if self.repositories else pulumi.Output.from_input({}))
        self.register_outputs({"repositoryUrls": self.urls})
