"""ECR: repositories as configured, immutable, scanned, KMS-encrypted, bounded by a valid lifecycle policy."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _program_helpers import BASE, run, with_changes
from infra.registry import lifecycle_policy, lifecycle_rule_problems
from policies.rules.ecr import lifecycle_problems as pack_lifecycle_problems

REPO = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
CONFIG = with_changes(BASE, ecrRepositories=["trainer", "ml/infer"], ecrKeepImages=7)


@pytest.fixture(scope="module")
def program():
    return run(CONFIG)


# ---- the validator (pure; the policy pack can call it) ----------------------------------------------------


def rule(priority, status, **selection):
    sel = {"tagStatus": status, "countType": "imageCountMoreThan", "countNumber": 5, **selection}
    return {"rulePriority": priority, "selection": sel, "action": {"type": "expire"}}


def test_any_rule_with_the_highest_priority_is_valid():
    assert lifecycle_rule_problems({"rules": [rule(1, "untagged"), rule(5, "tagged", tagPrefixList=["v"]),
                                              rule(9, "any")]}) == []


def test_any_rule_below_another_priority_is_rejected():
    problems = lifecycle_rule_problems({"rules": [rule(1, "any"), rule(2, "untagged")]})
    assert problems == ["the tagStatus any rule (rulePriority 1) must have the highest rulePriority (2 is higher)"]


def test_repeated_priorities_are_rejected():
    problems = lifecycle_rule_problems({"rules": [rule(3, "untagged"), rule(3, "tagged", tagPatternList=["*"])]})
    assert problems == ["rulePriority values must be unique (repeated: 3)"]


@pytest.mark.parametrize("bad_rule, problem", [
    (rule(1, "tagged"), "rules[0]: a tagged rule needs exactly one of tagPrefixList or tagPatternList"),
    (rule(1, "tagged", tagPrefixList=["v"], tagPatternList=["*"]),
     "rules[0]: a tagged rule needs exactly one of tagPrefixList or tagPatternList"),
    (rule(1, "untagged", tagPrefixList=["v"]), "rules[0]: tagPrefixList is only allowed with tagStatus tagged"),
    (rule(1, "sometimes"), "rules[0].selection.tagStatus ('sometimes') must be one of tagged, untagged, any"),
    (rule(0, "untagged"), "rules[0].rulePriority (0) must be a positive integer"),
    (rule(True, "untagged"), "rules[0].rulePriority (True) must be a positive integer"),
    (rule(1, "untagged", countType="sinceImagePushed"), "rules[0].selection.countUnit must be days for sinceImagePushed"),
    (rule(1, "untagged", countNumber=0), "rules[0].selection.countNumber (0) must be a positive integer"),
    ({**rule(1, "untagged"), "action": {"type": "keep"}}, "rules[0].action.type must be expire"),
])
def test_each_ecr_rule_is_enforced(bad_rule, problem):
    assert lifecycle_rule_problems({"rules": [bad_rule]}) == [problem]


def test_two_any_rules_are_rejected():
    assert "at most one rule may select tagStatus any" in lifecycle_rule_problems(
        {"rules": [rule(1, "any"), rule(2, "any")]})


@pytest.mark.parametrize("doc", ["{not json", {}, {"rules": []}, []])
def test_malformed_documents_are_rejected(doc):
    assert lifecycle_rule_problems(doc) != []


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=1000))
def test_generated_policy_is_valid_for_every_allowed_keep_count(keep):
    policy = lifecycle_policy(keep)
    assert lifecycle_rule_problems(policy) == []
    assert lifecycle_rule_problems(json.dumps(policy)) == []
    # The policy pack (a different implementation, with kiln's own cap) agrees.
    assert pack_lifecycle_problems(json.dumps(policy), keep) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["tagged", "untagged", "any"]), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_any_rule_validity_depends_only_on_its_priority_being_the_highest(statuses, rnd):
    rules = [rule(i + 1, s, **({"tagPatternList": ["*"]} if s == "tagged" else {})) for i, s in enumerate(statuses)]
    shuffled = copy.deepcopy(rules)
    rnd.shuffle(shuffled)
    problems = lifecycle_rule_problems({"rules": shuffled})
    anys = [r["rulePriority"] for r in rules if r["selection"]["tagStatus"] == "any"]
    expect_valid = len(anys) == 0 or (len(anys) == 1 and anys[0] == len(rules))
    assert (problems == []) == expect_valid


# ---- the program -----------------------------------------------------------------------------------------


def test_one_immutable_scanned_kms_repository_per_configured_name(program):
    repos = {r.inputs["name"]: r for r in program.of_type(REPO)}
    assert set(repos) == {"trainer", "ml/infer"}
    for repo in repos.values():
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert [c["encryptionType"] for c in repo.inputs["encryptionConfigurations"]] == ["KMS"]
        assert repo.inputs["tags"] == {"kiln.dev/cluster": "kiln-test"}


def test_each_repository_has_a_lifecycle_policy_that_keeps_the_configured_count(program):
    policies = {p.inputs["repository"]: p for p in program.of_type(LIFECYCLE)}
    assert set(policies) == {"trainer", "ml/infer"}
    for name, policy in policies.items():
        repo = next(r for r in program.of_type(REPO) if r.inputs["name"] == name)
        assert policy.parent == repo.urn
        doc = json.loads(policy.inputs["policy"])
        assert lifecycle_rule_problems(doc) == []
        untagged, tagged = sorted(doc["rules"], key=lambda r: r["rulePriority"])
        assert untagged["selection"] == {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                         "countUnit": "days", "countNumber": 1}
        assert tagged["selection"] == {"tagStatus": "tagged", "tagPatternList": ["*"],
                                       "countType": "imageCountMoreThan", "countNumber": 7}
        assert untagged["action"] == tagged["action"] == {"type": "expire"}


def test_keep_count_defaults_to_ten():
    program = run(with_changes(BASE, ecrRepositories=["trainer"]))
    [policy] = program.of_type(LIFECYCLE)
    counts = [r["selection"]["countNumber"] for r in json.loads(policy.inputs["policy"])["rules"]
              if r["selection"]["countType"] == "imageCountMoreThan"]
    assert counts == [10]


def test_output_maps_each_name_to_its_repository_url(program):
    assert program.outputs["ecrRepositories"] == {
        "trainer": "123456789012.dkr.ecr.us-east-2.amazonaws.com/trainer",
        "ml/infer": "123456789012.dkr.ecr.us-east-2.amazonaws.com/ml/infer",
    }


def test_no_repositories_means_none_created_and_an_empty_output():
    program = run(with_changes(BASE, ecrRepositories=None))
    assert program.of_type(REPO) == [] and program.of_type(LIFECYCLE) == []
    assert program.outputs["ecrRepositories"] == {}


def test_repositories_are_children_of_the_registry_component(program):
    component = program.one("kiln:infra:Registry")
    assert {r.inputs["name"] for r in program.children_of(component) if r.type == REPO} == {"trainer", "ml/infer"}
