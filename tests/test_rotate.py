"""The rotation pipeline with a fake stack (implementing the stack seam) and the simulator as the fleet.

Includes an interruption after every step followed by a rerun with the same
arguments, which must finish the rotation exactly as an uninterrupted run does.
The stand-in stack is tested against a moto server over HTTP.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

import pytest
from pulumi.automation.events import EngineEvent

from automation.rotate import cli as rotate_cli
from automation.rotate.pipeline import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, STEPS, BadInput, IntentStore, Rotation,
                                        World)
from automation.rotate.fleet import prediction, replace_with_simulator, report_of, scenario_for_groups
from automation.stack import desired_amis

OLD_AMI, NEW_AMI = "ami-0000000000000aaaa", "ami-0000000000000bbbb"


class Interrupted(BaseException):
    """Stands in for Ctrl-C / a killed process between two steps."""


class FakeStack:
    """The stack seam over an in-memory stack: config, deployed launch-template versions, a fleet."""

    kind = "fake"

    def __init__(self, ami: str = OLD_AMI, model: str = "v5", nodes: dict[str, int] | None = None,
                 extra_events: tuple[EngineEvent, ...] = ()):
        self.name = "prod"
        self.config = {"kiln:nodeAmi": ami, "kiln:modelVersion": model, "kiln:clusterName": "kiln"}
        self.lt_versions = [ami]                     # version n is lt_versions[n - 1]
        nodes = nodes if nodes is not None else {"gpu-a": 3, "gpu-b": 2}
        self.asg_version = {asg: 1 for asg in nodes}
        self.instances = {asg: [1] * n for asg, n in nodes.items()}  # each instance's LT version
        self.extra_events = list(extra_events)
        self.fail_up = False
        self.ups = 0
        self._seq = 0

    def get_config(self, key: str) -> Optional[str]:
        return self.config.get(key)

    def set_config(self, values: dict[str, str]) -> None:
        self.config.update(values)

    @property
    def wanted_ami(self) -> str:
        return desired_amis(self.config["kiln:nodeAmi"])["standard"]

    def _event(self, op: str, type_: str, name: str, diffs: list[str]) -> EngineEvent:
        self._seq += 1
        return EngineEvent.from_json({"sequence": self._seq, "timestamp": 0, "resourcePreEvent": {"metadata": {
            "op": op, "urn": f"urn:pulumi:prod::kiln::{type_}::{name}", "type": type_, "provider": "",
            "diffs": diffs}}})

    def preview(self, on_event) -> None:
        changed = self.wanted_ami != self.lt_versions[-1]
        on_event(self._event("same", "aws:eks/cluster:Cluster", "kiln", []))
        on_event(self._event("update" if changed else "same", "aws:ec2/launchTemplate:LaunchTemplate", "gpu",
                             ["imageId"] if changed else []))
        for asg in self.asg_version:
            on_event(self._event("update" if changed else "same", "aws:autoscaling/group:Group", asg,
                                 ["launchTemplate"] if changed else []))
        if changed:
            for e in self.extra_events:
                on_event(e)

    def up(self, on_event=None) -> dict[str, Any]:
        self.ups += 1
        if self.fail_up:
            raise RuntimeError("engine error: rate exceeded")
        if self.wanted_ami != self.lt_versions[-1]:
            self.lt_versions.append(self.wanted_ami)
            for asg in self.asg_version:
                self.asg_version[asg] = len(self.lt_versions)
        return self.outputs()

    def outputs(self) -> dict[str, Any]:
        return {"clusterName": "kiln", "nodeAmi": self.config["kiln:nodeAmi"],
                "modelVersion": self.config["kiln:modelVersion"],
                "nodeGroups": {"gpu": [{"zone": f"us-east-2{asg[-1]}", "asgName": asg, "launchTemplateId": "lt-1"}
                                       for asg in self.asg_version]}}

    def old_nodes(self) -> int:
        return sum(v != self.asg_version[a] for a, vs in self.instances.items() for v in vs)

    def node_amis(self) -> set[str]:
        return {self.lt_versions[v - 1] for vs in self.instances.values() for v in vs}


class Fleet:
    """The simulator as the fleet behind the fake stack: replaces the stack's old nodes."""

    def __init__(self, stack: FakeStack, faults: tuple[dict, ...] = ()):
        self.stack, self.faults, self.runs = stack, faults, []

    def replace(self, outputs: dict[str, Any]) -> dict[str, Any]:
        old = {asg: sum(v != self.stack.asg_version[asg] for v in vs) for asg, vs in self.stack.instances.items()}
        scenario = scenario_for_groups(
            [{"name": asg, "nodes": n, "zone": f"us-east-2{asg[-1]}"} for asg, n in old.items()],
            jobs={"running": sum(old.values()), "remaining_seconds": [300, 2400]}, deadline_seconds=3600,
            faults=list(self.faults))
        report = report_of(replace_with_simulator(scenario))
        self.runs.append(report)
        if report["outcome"] == "completed":
            for asg, vs in self.stack.instances.items():
                self.stack.instances[asg] = [self.stack.asg_version[asg]] * len(vs)
        return report


class Baker:
    """Bake by recipe: the same model version reuses its AMI."""

    def __init__(self):
        self.built: dict[tuple[str, str], str] = {}
        self.builds = 0

    def __call__(self, intent, family: str) -> str:
        key = (intent.model_version, family)
        if key not in self.built:
            self.builds += 1
            self.built[key] = NEW_AMI
        return self.built[key]


def make(tmp_path, stack: Optional[FakeStack] = None, **world_kw):
    stack = stack or FakeStack()
    fleet = Fleet(stack, world_kw.pop("faults", ()))
    baker = Baker()
    world = World(stack=stack, bake=baker, replace=fleet.replace, **world_kw)
    return Rotation(world, IntentStore(tmp_path / "state")), stack, fleet, baker


def test_rotation_end_to_end(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_OK and report.outcome == "done", report.message
    assert report.steps == list(STEPS)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.config["kiln:modelVersion"] == "v6"
    assert stack.old_nodes() == 0 and stack.node_amis() == {NEW_AMI}
    assert report.rollout["outcome"] == "completed" and report.rollout["nodes_terminated"] == 5
    assert report.gate["allowed"] and not report.converge["changes"]
    assert stack.ups == 2  # up, then up again to converge
    assert IntentStore(tmp_path / "state").load("prod") is None
    assert IntentStore(tmp_path / "state").last("prod").previous_ami == OLD_AMI


@pytest.mark.parametrize("after", STEPS)
def test_interrupted_after_any_step_then_rerun_continues(tmp_path, after):
    stops = []

    def interrupt(step):
        if step == after and not stops:
            stops.append(step)
            raise Interrupted(step)

    rotation, stack, fleet, baker = make(tmp_path, checkpoint=interrupt)
    with pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")  # same arguments: continues
    assert report.exit_code == EXIT_OK, report.message
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.node_amis() == {NEW_AMI}
    assert baker.builds == 1                      # the rerun reused the AMI
    assert len(stack.lt_versions) == 2            # one new launch-template version, not two
    assert sum(r["nodes_terminated"] for r in fleet.runs) == 5  # every old node replaced once
    # The previous AMI survives the interruption: rollback knows where to go.
    assert IntentStore(tmp_path / "state").last("prod").previous_ami == OLD_AMI


def test_interrupted_during_the_bake_then_rerun(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    real_bake = rotation.w.bake

    def bake_once_interrupted(intent, family):
        rotation.w.bake = real_bake
        raise Interrupted("killed while baking")

    rotation.w.bake = bake_once_interrupted
    with pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert stack.config["kiln:nodeAmi"] == OLD_AMI
    assert rotation.rotate("prod", "v6", "s3://models/llm/v6/").exit_code == EXIT_OK
    assert stack.node_amis() == {NEW_AMI}


def test_replacement_that_raises_keeps_the_intent_and_a_rerun_finishes(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    calls = []

    def flaky_replace(outputs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("API server unreachable")
        return fleet.replace(outputs)

    rotation.w.replace = flaky_replace
    with pytest.raises(ConnectionError):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert IntentStore(tmp_path / "state").load("prod").previous_ami == OLD_AMI
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_OK and stack.node_amis() == {NEW_AMI}
    assert report.previous_ami == OLD_AMI


def test_rerun_with_other_arguments_while_in_flight_is_bad_input(tmp_path):
    rotation, stack, *_ = make(tmp_path, checkpoint=lambda s: (_ for _ in ()).throw(Interrupted()) if s == "up" else None)
    with pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    with pytest.raises(BadInput, match="in progress"):
        rotation.rotate("prod", "v7", "s3://models/llm/v7/")


def test_gate_blocks_a_cluster_replace_and_restores_config(tmp_path):
    cluster_replace = EngineEvent.from_json({"sequence": 99, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "replace", "urn": "urn:pulumi:prod::kiln::aws:eks/cluster:Cluster::kiln",
        "type": "aws:eks/cluster:Cluster", "provider": "", "keys": ["version"], "diffs": ["version"]}}})
    rotation, stack, fleet, _ = make(tmp_path, FakeStack(extra_events=(cluster_replace,)))
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_FAILED and report.outcome == "blocked"
    assert "aws:eks/cluster:Cluster" in report.message and "version" in report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert report.config_restored and stack.ups == 0 and fleet.runs == []


def test_dry_run_predicts_and_changes_nothing(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    def predict(outputs):
        groups = [{"name": g["asgName"], "nodes": 3, "zone": g["zone"]} for g in outputs["nodeGroups"]["gpu"]]
        return prediction(replace_with_simulator(scenario_for_groups(
            groups, jobs={"remaining_list": [600, 900, 5400]}, deadline_seconds=3600)))

    rotation.w.predict = predict
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/", dry_run=True)
    assert report.exit_code == EXIT_OK and report.outcome == "dry_run"
    assert report.prediction["simulated"] and report.prediction["nodes_replaced"] == 6
    assert report.prediction["jobs_outliving_deadline"] == 1  # the 90-minute Job, with a 60-minute deadline
    assert report.prediction["duration_seconds"] > 0
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.ups == 0 and fleet.runs == []


def test_dry_run_never_undoes_a_rotation_in_flight(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, checkpoint=lambda s: (_ for _ in ()).throw(Interrupted()) if s == "up" else None)
    with pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    with pytest.raises(BadInput, match="in progress"):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/", dry_run=True)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI  # untouched


def test_interrupted_dry_run_then_real_run_keeps_the_true_previous_ami(tmp_path):
    stop = ["preview"]

    def interrupt(step):
        if stop and step == "set-config":
            stop.clear()
            raise Interrupted()

    rotation, stack, *_ = make(tmp_path, checkpoint=interrupt)
    with pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/", dry_run=True)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI  # the dry run was cut off before restoring
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_OK and report.previous_ami == OLD_AMI


def test_failed_up_restores_the_previous_ami(tmp_path):
    rotation, stack, *_ = make(tmp_path)
    stack.fail_up = True
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_FAILED and "rate exceeded" in report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and report.config_restored


def test_rolled_back_replacement_restores_config_and_exits_1(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, faults=({"kind": "bad_ami"},))
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_FAILED and report.outcome == "rolled_back", report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert stack.lt_versions[-1] == OLD_AMI  # the restore was applied with up


def test_not_confirmed_applies_nothing(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, confirm=lambda result: False)
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.outcome == "not_confirmed" and report.exit_code == EXIT_FAILED
    assert stack.ups == 0 and stack.config["kiln:nodeAmi"] == OLD_AMI


def test_rollback_sets_the_previous_ami_back_and_replaces_again(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    assert rotation.rotate("prod", "v6", "s3://models/llm/v6/").exit_code == EXIT_OK
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_OK and report.kind == "rollback", report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert stack.node_amis() == {OLD_AMI} and len(fleet.runs) == 2
    assert fleet.runs[1]["nodes_terminated"] == 5


def test_rollback_without_history_is_bad_input(tmp_path):
    rotation, *_ = make(tmp_path)
    with pytest.raises(BadInput, match="--ami"):
        rotation.rollback("prod")


def test_family_map_config_keeps_its_shape(tmp_path):
    stack = FakeStack(ami=json.dumps({"standard": OLD_AMI}))
    rotation, stack, *_ = make(tmp_path, stack)
    assert rotation.rotate("prod", "v6", "s3://m/v6/").exit_code == EXIT_OK
    assert json.loads(stack.config["kiln:nodeAmi"]) == {"standard": NEW_AMI}


def _parse(module_configure, argv):
    parser = argparse.ArgumentParser()
    module_configure(parser)
    return parser.parse_args(argv)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "V6!", "--state-dir", str(tmp_path)])
    assert rotate_cli.main(args) == EXIT_BAD_INPUT
    assert "--model-version" in capsys.readouterr().err
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--model-uri", "http://x"])
    assert rotate_cli.main(args) == EXIT_BAD_INPUT
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--strategy", "yolo"])
    assert rotate_cli.main(args) == EXIT_BAD_INPUT
    assert "--strategy" in capsys.readouterr().err


def test_the_program_exports_what_rotate_and_bake_consume():
    """The stack-output contract, checked on the real __main__.py under Pulumi mocks."""
    from tests._program_helpers import BASE, run

    outputs = run(BASE).outputs  # cached: other program tests in this process share the run
    assert outputs["clusterName"] == "kiln-test" and outputs["nodeAmi"] and outputs["modelVersion"] == "v5"
    (entries,) = outputs["nodeGroups"].values()
    assert len(entries) == 2 and all({"zone", "asgName", "launchTemplateId"} <= set(e) for e in entries)
    assert len(outputs["privateSubnetIds"]) == 2 and outputs["nodeInstanceProfile"]


def test_rollback_cli_without_history_exits_2(tmp_path, monkeypatch, capsys):
    from automation.rotate import rollback_cli

    monkeypatch.setenv("PATH", str(tmp_path))            # no pulumi CLI: the stand-in
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    args = _parse(rollback_cli.configure, ["--stack", "prod", "--state-dir", str(tmp_path / "state"), "--yes"])
    assert rollback_cli.main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--ami" in err and "STAND-IN" in err
