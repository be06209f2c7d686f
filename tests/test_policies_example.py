"""The policy pack on the project's own program: the example stack passes, a bad-but-valid config fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from policies import offline
from policies.program import PROJECT_DIR, run_program

EXAMPLE = PROJECT_DIR / "Pulumi.example.yaml"


@pytest.fixture(scope="module")
def example_config() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())["config"]


def test_make_policy_check_command_passes_on_the_example():
    """Exactly what `make policy-check` (and so .ci/run) runs."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    result = subprocess.run([sys.executable, "-m", "policies", "check", "--config", "Pulumi.example.yaml"],
                            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("PASS: 0 mandatory")


def test_example_is_actually_evaluated(example_config):
    """The pass above is not vacuous: the rules' resources were registered and analysed."""
    run = run_program(example_config, stack="example")
    report = offline.evaluate(run, stack="example")
    assert report.violations == [] and report.not_applicable == []
    types = Counter(r.type for r in run.resources)
    groups, zones = len(example_config["kiln:nodeGroups"]), len(example_config["kiln:availabilityZones"])
    assert types["aws:autoscaling/group:Group"] == groups * zones
    assert types["aws:ec2/launchTemplate:LaunchTemplate"] == groups
    assert types["eks:index:Cluster"] == 1
    assert types["kubernetes:core/v1:PersistentVolume"] == 1
    assert types["aws:ecr/repository:Repository"] == types["aws:ecr/lifecyclePolicy:LifecyclePolicy"] \
        == len(example_config["kiln:ecrRepositories"])
    assert types["aws:iam/role:Role"] >= 3  # node, VPC CNI (IRSA), autoscaler (IRSA), rollout, CI ...
    assert report.resources == len(run.resources)
    # Dropping one zone's ASG of one group is caught by the stack rule.
    missing = next(r for r in run.resources if r.type == "aws:autoscaling/group:Group")
    run.resources.remove(missing)
    found = [v.message for v in offline.evaluate(run).violations]
    assert len(found) == 1 and found[0].startswith("node group ") and "has no ASG in us-east-2" in found[0]


def test_example_preview_passes(example_config):
    report = offline.check(example_config, stack="example", preview=True)
    assert report.mandatory == [], [(v.policy, v.name, v.message) for v in report.mandatory]


def test_bad_but_valid_config_is_caught(example_config, tmp_path, capsys):
    """Config the typed config accepts but the pack forbids: a budget, not a validity, question.

    50 kept images pass the config's 1..1000 bound yet exceed the pack's maxImages (20);
    1000 nodes per zone pass the config's sanity bound yet exceed maxNodesPerGroup (100).
    """
    groups = [dict(g) for g in example_config["kiln:nodeGroups"]]
    groups[0]["maxSize"] = 1000
    bad = {**example_config, "kiln:ecrKeepImages": 50, "kiln:nodeGroups": groups}
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": bad}))
    code = offline.main(["--config", str(path), "--json"])
    out = capsys.readouterr().out
    assert code == 1, out
    report = json.loads(out.strip().splitlines()[-1])
    found = {(v["policy"], v["type"]) for v in report["violations"] if v["level"] == "mandatory"}
    assert found == {("ecr-lifecycle-policy", "aws:ecr/lifecyclePolicy:LifecyclePolicy"),
                     ("cost-max-nodes-per-group", "aws:autoscaling/group:Group"),
                     ("cost-max-nodes-per-stack", "aws:autoscaling/group:Group")}
    lifecycle = [v for v in report["violations"] if v["policy"] == "ecr-lifecycle-policy"]
    assert len(lifecycle) == len(example_config["kiln:ecrRepositories"])  # one per repository
    assert all(v["message"] == "keeps up to 50 tagged images; at most 20 allowed" for v in lifecycle)
    per_group = [v for v in report["violations"] if v["policy"] == "cost-max-nodes-per-group"]
    assert len(per_group) == len(example_config["kiln:availabilityZones"])  # each zone's ASG of the group
    assert all("node group 'general' may grow to 3000 nodes" in v["message"] for v in per_group)
