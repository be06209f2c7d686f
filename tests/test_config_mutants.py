"""The config parser's decisions, each with its exact result: the problems it lists (every line names its key)
or the typed value it returns, and the stack file read as the Pulumi CLI reads it.

Written against the survivors of a sampled mutmut run on ``infra/config.py`` (issue 15): each test pins one
behaviour the rest of the suite left loose — node group size bounds, the termination settings, the CI role
trusts, and the stack-file YAML loader's bool, int, octal, hex, float and duplicate-key rules.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from infra.config import CiRoleTrust, ConfigError, TerminationConfig, parse, read_stack_yaml

GOOD = {
    "clusterName": "kiln-dev", "kubernetesVersion": "1.33", "availabilityZones": ["us-east-2a", "us-east-2b"],
    "nodeAmi": "ami-0123456789abcdef0", "modelVersion": "v5",
    "nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 3, "desiredSize": 1}],
}
CPU = GOOD["nodeGroups"][0]
# An untainted group with a node, so a group under test may be empty (cluster services need somewhere to run).
SYSTEM = {"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2, "desiredSize": 1}
CI = {"providerUrl": "https://token.actions.githubusercontent.com", "audience": "sts.amazonaws.com",
      "subject": "repo:o/r:ref:refs/heads/main"}
GITHUB_PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"


def config(**changes):
    raw = copy.deepcopy(GOOD)
    raw.update(changes)
    return parse(raw)


def problems(**changes) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(**changes)
    return info.value.problems


# --------------------------------------------------------------------------- required keys


def test_an_empty_required_key_is_reported_as_required():
    assert problems(clusterName="") == ["kiln:clusterName is required"]


def test_a_missing_required_key_is_reported_as_required():
    raw = copy.deepcopy(GOOD)
    del raw["clusterName"]
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert info.value.problems == ["kiln:clusterName is required"]


# --------------------------------------------------------------------------- node group sizes


def test_a_node_group_field_left_out_is_reported_as_required():
    nameless = {k: v for k, v in CPU.items() if k != "name"}
    assert problems(nodeGroups=[nameless]) == ["kiln:nodeGroups[0].name is required"]


def test_a_negative_desired_size_is_reported_once_against_its_own_minimum():
    # Not "must be >= minSize (0)": the value is out of range before it is compared with the other sizes.
    assert problems(nodeGroups=[{**CPU, "minSize": 0, "desiredSize": -1}]) == [
        "kiln:nodeGroups[0].desiredSize (-1) must be >= 0"]


def test_a_desired_size_equal_to_max_size_is_accepted():
    (group,) = config(nodeGroups=[{**CPU, "desiredSize": 3}]).node_groups
    assert (group.min_size, group.desired_size, group.max_size) == (1, 3, 3)


def test_a_group_that_can_never_have_a_node_is_refused():
    assert problems(nodeGroups=[SYSTEM, {**CPU, "minSize": 0, "maxSize": 0, "desiredSize": 0}]) == [
        "kiln:nodeGroups[1].maxSize (0) must be >= 1"]


# --------------------------------------------------------------------------- CI roles, model bucket, chart


def test_a_provider_arn_matches_a_provider_url_with_a_trailing_slash():
    ci = config(ciOidc={**CI, "allowCustomIssuer": True, "providerUrl": CI["providerUrl"] + "/",
                        "providerArn": GITHUB_PROVIDER_ARN}).ci_oidc
    assert ci.provider_arn == GITHUB_PROVIDER_ARN


def test_a_preview_role_takes_its_subject_and_the_default_audience():
    ci = config(ciOidc={**CI, "preview": {"subject": "repo:o/r:pull_request"}}).ci_oidc
    assert ci.preview == CiRoleTrust("repo:o/r:pull_request", "sts.amazonaws.com")
    assert ci.rotation is None


def test_an_object_lambda_alias_is_not_a_model_bucket():
    assert problems(modelBucket="models--ol-s3") == ["kiln:modelBucket ('models--ol-s3') is not a valid S3 bucket name"]


def test_the_autoscaler_chart_version_reaches_the_typed_config():
    assert config(autoscalerChartVersion="9.46.6").autoscaler_chart_version == "9.46.6"


# --------------------------------------------------------------------------- termination


def test_a_heartbeat_that_is_not_an_integer_is_a_problem_naming_the_key():
    assert problems(terminationHeartbeatSeconds="soon") == [
        "kiln:terminationHeartbeatSeconds ('soon') must be an integer"]


def test_a_heartbeat_below_the_lifecycle_hook_minimum_is_refused():
    assert problems(terminationHeartbeatSeconds=29) == ["kiln:terminationHeartbeatSeconds (29) must be >= 30"]


def test_a_negative_job_grace_is_a_problem_naming_the_key():
    assert problems(terminationJobGraceSeconds=-1) == ["kiln:terminationJobGraceSeconds (-1) must be >= 0"]


def test_a_handler_image_not_by_registry_is_a_problem_naming_the_key():
    assert problems(terminationHandlerImage="nginx:latest") == [
        "kiln:terminationHandlerImage ('nginx:latest') must be a full image reference starting with a registry "
        "host (a name with a dot or a port, or localhost), such as 123456789012.dkr.ecr.us-east-2.amazonaws.com/"
        "trainer:1.4"]


def test_a_configured_heartbeat_is_the_one_the_hook_gets():
    assert config(terminationHeartbeatSeconds=600, terminationJobGraceSeconds=900).termination == TerminationConfig(
        job_grace_seconds=900, heartbeat_seconds=600, handler_image=None)


# --------------------------------------------------------------------------- the stack file, as Pulumi reads it


@pytest.mark.parametrize("text, value", [
    ("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False),
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),  # YAML 1.1 booleans stay strings
    ("null", None), ("~", None), ("", None),
    ("1.5", 1.5), ("-2.5e3", -2500.0),
    ("42", 42), ("-7", -7), ("+7", 7),
    ("0o17", 15), ("0x1f", 31), ("0x1F", 31),
    ("017", 15), ("-017", -15), ("0", 0),
    ("16:40", "16:40"), ("2024-01-01", "2024-01-01"),
])
def test_a_plain_scalar_resolves_as_yaml_1_2_core(text, value):
    (read,) = read_stack_yaml(f"a: {text}\n").values()
    assert read == value and type(read) is type(value)


def test_a_key_given_twice_is_refused_with_the_line_of_the_first():
    with pytest.raises(yaml.constructor.ConstructorError) as info:
        read_stack_yaml("config:\n  a: 1\n  b: 2\n  a: 3\n")
    assert info.value.problem == "key 'a' is given twice (first at line 2); Pulumi refuses the file"
    assert info.value.problem_mark.line + 1 == 4
