"""The rotation pipeline with a fake stack (implementing the stack seam) and the simulator as the fleet.

Includes an interruption after every step followed by a rerun with the same
arguments, which must finish the rotation exactly as an uninterrupted run does.
The stand-in stack is tested against a moto server over HTTP.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from unittest import mock

import pytest
from pulumi.automation.events import EngineEvent

from automation.gate import EventRecorder

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
        # maxSize as the program declares it, as the engine's state has it, and as it is live in AWS:
        # the engine sees a live change only after a refresh.
        self.declared_max = self.state_max = self.live_max = 10

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

    def preview(self, on_event, *, refresh: bool = False) -> None:
        if refresh:
            self.state_max = self.live_max
        changed = self.wanted_ami != self.lt_versions[-1]
        on_event(self._event("same", "aws:eks/cluster:Cluster", "kiln", []))
        if self.state_max != self.declared_max:
            on_event(self._event("update", "aws:autoscaling/group:Group", "gpu-a", ["maxSize"]))
        on_event(self._event("update" if changed else "same", "aws:ec2/launchTemplate:LaunchTemplate", "gpu",
                             ["imageId"] if changed else []))
        for asg in self.asg_version:
            on_event(self._event("update" if changed else "same", "aws:autoscaling/group:Group", asg,
                                 ["launchTemplate"] if changed else []))
        if changed:
            for e in self.extra_events:
                on_event(e)

    def up(self, on_event=None, *, refresh: bool = False) -> dict[str, Any]:
        self.ups += 1
        if self.fail_up:
            raise RuntimeError("engine error: rate exceeded")
        if refresh:
            self.state_max = self.live_max
        if self.state_max != self.declared_max:
            self.state_max = self.live_max = self.declared_max
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


def test_cli_deadline_takes_the_same_durations_as_replace(tmp_path, capsys):
    base = ["--stack", "prod", "--model-version", "v6", "--state-dir", str(tmp_path)]
    assert rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--deadline", "1h30m"]))["deadline_seconds"] == 5400
    assert rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--deadline", "7200"]))["deadline_seconds"] == 7200
    with pytest.raises(SystemExit) as exit_:
        _parse(rotate_cli.configure, [*base, "--deadline", "soon"])
    assert exit_.value.code == EXIT_BAD_INPUT and "--deadline" in capsys.readouterr().err


def test_cli_job_kind_flags_reach_the_rollout_options(tmp_path, capsys):
    from automation.rollout.engine import DEFAULT_JOB_OWNER_KINDS
    from automation.rollout.runner import RolloutOptions
    from automation.rotate import rollback_cli

    base = ["--stack", "prod", "--model-version", "v6", "--state-dir", str(tmp_path)]
    options = rotate_cli.rollout_options(_parse(rotate_cli.configure, base))
    assert options["job_owner_kinds"] == DEFAULT_JOB_OWNER_KINDS
    options = rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--also-job-kinds", "RayCluster"]))
    assert options["job_owner_kinds"] == DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    RolloutOptions(cluster_name="kiln", **options).validate()        # what wiring.make_replace builds
    options = rotate_cli.rollout_options(_parse(rollback_cli.configure, ["--stack", "prod", "--job-kinds", "Job,TFJob"]))
    assert options["job_owner_kinds"] == {"Job", "TFJob"}
    with pytest.raises(SystemExit) as exit_:
        _parse(rotate_cli.configure, [*base, "--job-kinds", "tfjob"])
    assert exit_.value.code == EXIT_BAD_INPUT and "--job-kinds" in capsys.readouterr().err


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
    args = _parse(rollback_cli.configure, ["--stack", "example", "--state-dir", str(tmp_path / "state"), "--yes"])
    assert rollback_cli.main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--ami" in err and "STAND-IN" in err


# --------------------------------------------------------------------------------------------- review fixes


def test_converge_restores_what_the_replacement_changed_outside_the_engine(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def replace_leaving_a_surge(outputs):
        report = fleet.replace(outputs)
        stack.live_max = 20  # changed in AWS behind the engine's back; only a refresh shows it
        return report

    rotation.w.replace = replace_leaving_a_surge
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert report.exit_code == EXIT_OK, report.message
    assert stack.live_max == stack.declared_max


def test_bad_input_found_mid_way_leaves_no_intent_and_the_corrected_command_runs(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    bake = rotation.w.bake

    def bake_needing_a_uri(intent, family):
        if not intent.model_uri:
            raise BadInput(f"--model-uri is required: no AMI for model {intent.model_version} exists yet")
        return bake(intent, family)

    rotation.w.bake = bake_needing_a_uri
    with pytest.raises(BadInput, match="--model-uri"):
        rotation.rotate("prod", "v6", None)
    assert IntentStore(tmp_path / "state").load("prod") is None
    report = rotation.rotate("prod", "v6", "s3://models/llm/v6/")  # not refused as "other arguments"
    assert report.exit_code == EXIT_OK and stack.node_amis() == {NEW_AMI}


def test_yes_required_without_a_terminal_leaves_the_config_as_it_was(tmp_path):
    def no_terminal(result):
        raise BadInput("--yes is required when stdin is not a terminal")

    rotation, stack, fleet, _ = make(tmp_path, confirm=no_terminal)
    with pytest.raises(BadInput, match="--yes"):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert stack.ups == 0 and IntentStore(tmp_path / "state").load("prod") is None


def test_bad_input_after_up_restores_and_applies_the_previous_ami(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def no_kubeconfig(outputs):
        raise BadInput("the stack has no kubeconfig output")

    rotation.w.replace = no_kubeconfig
    with pytest.raises(BadInput):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/")
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.lt_versions[-1] == OLD_AMI


def test_dry_run_whose_prediction_fails_leaves_the_config_as_it_was(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def predict(outputs):
        raise ConnectionError("API server unreachable")

    rotation.w.predict = predict
    with pytest.raises(ConnectionError):
        rotation.rotate("prod", "v6", "s3://models/llm/v6/", dry_run=True)
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.ups == 0
    assert IntentStore(tmp_path / "state").load("prod") is None


def test_cli_unknown_stack_exits_2_naming_the_flag(tmp_path, monkeypatch, capsys):
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    from automation import stack as stack_module

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    argv = ["--stack", "no-such-stack", "--model-version", "v6", "--state-dir", str(tmp_path), "--yes"]
    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)  # the stand-in: no stack file
    assert rotate_cli.main(_parse(rotate_cli.configure, argv)) == EXIT_BAD_INPUT
    assert "--stack" in capsys.readouterr().err
    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: True)  # the Automation API: no such stack
    not_found = auto.StackNotFoundError(CommandResult(stdout="", stderr="error: no stack named 'no-such-stack' found",
                                                      code=255))
    monkeypatch.setattr(auto, "select_stack", mock.create_autospec(auto.select_stack, side_effect=not_found))
    assert rotate_cli.main(_parse(rotate_cli.configure, argv)) == EXIT_BAD_INPUT
    assert "--stack" in capsys.readouterr().err


def test_rollback_cli_bad_ami_exits_2_naming_the_flag(tmp_path, capsys):
    from automation.rotate import rollback_cli

    for bad in ("ami-xyz", "prod-v5", '{"nvidia": "ami-0123456789abcdef0"}'):
        args = _parse(rollback_cli.configure, ["--stack", "prod", "--ami", bad, "--model-version", "v5",
                                               "--state-dir", str(tmp_path)])
        assert rollback_cli.main(args) == EXIT_BAD_INPUT
        assert "--ami" in capsys.readouterr().err
    assert rotate_cli._is_node_ami('{"standard": "ami-0123456789abcdef0", "nvidia": "ami-0123456789abcdef1"}')


# ------------------------------------------------------------------- the real Automation API seam, no CLI
# ``create_autospec`` copies the installed SDK's signatures (pulumi 3.272.0): a call or argument name
# that does not exist there raises TypeError. Return values are the SDK's own types.


def _autospec_stack(monkeypatch):
    from pulumi import automation as auto

    stack = mock.create_autospec(auto.Stack, instance=True)
    select = mock.create_autospec(auto.select_stack, return_value=stack)
    monkeypatch.setattr(auto, "select_stack", select)
    return auto, select, stack


def test_pulumi_stack_selects_the_stack_on_this_project_and_sets_config(monkeypatch, tmp_path):
    from pulumi.automation._cmd import CommandResult

    from automation.stack import PulumiStack

    auto, select, api = _autospec_stack(monkeypatch)
    stack = PulumiStack("prod", tmp_path)
    select.assert_called_once_with(stack_name="prod", work_dir=str(tmp_path))

    stack.set_config({"kiln:nodeAmi": NEW_AMI, "kiln:modelVersion": "v6"})
    (config,), kwargs = api.set_all_config.call_args
    assert {k: (v.value, v.secret) for k, v in config.items()} == {
        "kiln:nodeAmi": (NEW_AMI, False), "kiln:modelVersion": ("v6", False)}
    assert all(isinstance(v, auto.ConfigValue) for v in config.values())

    api.get_config.return_value = auto.ConfigValue(value=OLD_AMI)
    assert stack.get_config("kiln:nodeAmi") == OLD_AMI
    api.get_config.side_effect = auto.CommandError(CommandResult(
        stdout="", stderr="error: configuration key 'kiln:nodeAmi' not found for stack 'prod'", code=255))
    assert stack.get_config("kiln:nodeAmi") is None


def test_pulumi_stack_preview_up_and_outputs(monkeypatch, tmp_path):
    import datetime

    from automation.stack import PulumiStack

    auto, _, api = _autospec_stack(monkeypatch)
    lines = []
    stack = PulumiStack("prod", tmp_path, on_output=lines.append)
    recorder = EventRecorder()
    stack.preview(recorder, refresh=True)
    api.preview.assert_called_once_with(on_event=recorder, diff=True, refresh=True, on_output=lines.append)

    outputs = {"clusterName": auto.OutputValue(value="kiln", secret=False),
               "kubeconfig": auto.OutputValue(value={"apiVersion": "v1", "clusters": []}, secret=True),
               "nodeGroups": auto.OutputValue(value={"gpu": [{"asgName": "gpu-a"}]}, secret=False)}
    summary = auto.UpdateSummary(kind="update", start_time=datetime.datetime.now(), message="", environment={},
                                 config={}, result="succeeded")
    api.up.return_value = auto.UpResult(stdout="", stderr="", summary=summary, outputs=outputs)
    plain = {"clusterName": "kiln", "kubeconfig": {"apiVersion": "v1", "clusters": []},
             "nodeGroups": {"gpu": [{"asgName": "gpu-a"}]}}
    assert stack.up() == plain  # the secret kubeconfig in plaintext, ready for the kubernetes client
    api.up.assert_called_once_with(on_event=None, refresh=False, on_output=lines.append)
    api.outputs.return_value = outputs
    assert stack.outputs() == plain


def test_a_second_rollback_goes_forward_again(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    assert rotation.rotate("prod", "v6", "s3://models/llm/v6/").exit_code == EXIT_OK
    assert rotation.rollback("prod").exit_code == EXIT_OK and stack.node_amis() == {OLD_AMI}
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_OK and stack.config["kiln:nodeAmi"] == NEW_AMI
    assert stack.config["kiln:modelVersion"] == "v6" and stack.node_amis() == {NEW_AMI}


def test_rollback_to_another_ami_while_a_rollback_is_in_flight_is_bad_input(tmp_path):
    rotation, stack, *_ = make(tmp_path)
    assert rotation.rotate("prod", "v6", "s3://models/llm/v6/").exit_code == EXIT_OK
    rotation.w.checkpoint = lambda step: (_ for _ in ()).throw(Interrupted()) if step == "up" else None
    with pytest.raises(Interrupted):
        rotation.rollback("prod")
    rotation.w.checkpoint = lambda step: None
    with pytest.raises(BadInput, match="--ami"):
        rotation.rollback("prod", ami="ami-0000000000000cccc", model_version="v4")
    assert stack.config["kiln:nodeAmi"] == OLD_AMI  # the rollback in flight is untouched ...
    assert rotation.rollback("prod").exit_code == EXIT_OK  # ... and continues
    assert stack.node_amis() == {OLD_AMI}


def test_cli_log_prints_engine_lines_verbatim():
    import io

    from rich.console import Console

    buffer = io.StringIO()
    log = rotate_cli.plain_log(Console(file=buffer, width=200, log_path=False))
    line = "  +- aws:eks/cluster:Cluster kiln replacing [diff: ~version]; [/x]"
    log(line)  # rich markup would drop "[diff: ~version]" and raise on "[/x]"
    assert line.strip() in buffer.getvalue()
